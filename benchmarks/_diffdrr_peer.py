"""DiffDRR side of bench_likelihood.py; runs in its own environment (torch, diffdrr).

    python _diffdrr_peer.py VOLUME.npz --height 256 --delx 2.5 --sdd 1300 --sid 1000 --repeats 10

Prints one JSON line with render and render+backward timings (seconds).
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from diffdrr.data import canonicalize
from diffdrr.drr import DRR
from torchio import ScalarImage, Subject


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("volume")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--delx", type=float, required=True)
    ap.add_argument("--sdd", type=float, default=1300.0)
    ap.add_argument("--sid", type=float, default=1000.0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    z = np.load(args.volume)
    vol = torch.as_tensor(z["occupancy"], dtype=torch.float32)[None]
    affine = np.diag([*z["pitch"].tolist(), 1.0])
    affine[:3, 3] = z["origin"]
    img = ScalarImage(tensor=vol, affine=affine)
    subject = Subject(
        volume=img,
        density=ScalarImage(tensor=vol.clone(), affine=affine),
        mask=None,
        reorient=torch.eye(4),
        orientation=None,
        fiducials=None,
    )
    subject = canonicalize(subject)
    drr = DRR(subject, sdd=args.sdd, height=args.height, delx=args.delx)
    # two orthogonal views, batched. DiffDRR's camera has its source at the origin and
    # looks along +z; the pose maps camera to world (axis-angle rotation, then translation).
    # AP: camera z -> world +y (rotate -90 deg about x), source at -SID along y.
    # Lateral: camera z -> world +x (rotate +90 deg about y), source at -SID along x.
    # DiffDRR applies the translation in the camera frame (source = R t).
    rot = torch.tensor([[-torch.pi / 2, 0.0, 0.0], [0.0, torch.pi / 2, 0.0]])
    trans = torch.tensor([[0.0, 0.0, -args.sid], [0.0, 0.0, -args.sid]])  # camera frame: source at -SID along the axis

    def render(r, t):
        return drr(r, t, parameterization="axis_angle")

    with torch.no_grad():
        out = render(rot, trans)
        fwd = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            render(rot, trans)
            fwd.append(time.perf_counter() - t0)
    target = out.detach()
    bwd = []
    for _ in range(args.repeats):
        r = rot.clone().requires_grad_(True)
        t = trans.clone().requires_grad_(True)
        t0 = time.perf_counter()
        loss = ((render(r, t) - target - 0.01) ** 2).sum()
        loss.backward()
        bwd.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "diffdrr_version": __import__("diffdrr").__version__,
                "torch_version": torch.__version__,
                "threads": torch.get_num_threads(),
                "volume_shape": list(vol.shape[1:]),
                "render_2views_s": statistics.median(fwd),
                "value_and_grad_2views_s": statistics.median(bwd),
                "image_sum": float(out.sum()),
                "image_nonzero_fraction": [float((o > 0).float().mean()) for o in out],
            }
        )
    )


if __name__ == "__main__":
    main()
