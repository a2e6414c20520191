"""One static, self-contained HTML page per case: pictures (embedded PNG), diagnostics,
reliability, measurements, and an interactive 3D view of the confidence mesh drawn by a
small inline script on a ``<canvas>`` (no network, no external files, no WebGL needed).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..posterior.samples import verdict_sentence

__all__ = ["write_report", "READY_MESSAGE"]

#: logged to the browser console by the page once the 3D view has been drawn
READY_MESSAGE = "bayesshape report ready"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0 1em}td,th{border:1px solid #ddd;padding:.25em .6em;font-size:.9em;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.verdict{font-size:1.1em;padding:.5em .8em;border-radius:4px;display:inline-block}
.ok{background:#e3f4e1}.bad{background:#fbe3e0}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
#viewer{border:1px solid #ccc;background:#fff;cursor:grab;touch-action:none}
.cbar{height:14px;width:300px;background:linear-gradient(to right,#440154,#3b528b,#21918c,#5ec962,#fde725)}
.muted{color:#666;font-size:.85em}
"""

_VIEWER_JS = (
    r"""
(function(){
  function b64(s, T){var bin=atob(s), u=new Uint8Array(bin.length);
    for(var i=0;i<bin.length;i++)u[i]=bin.charCodeAt(i); return new T(u.buffer);}
  var M=JSON.parse(document.getElementById('mesh-data').textContent);
  var P=b64(M.vertices, Float32Array), F=b64(M.faces, Uint32Array), C=b64(M.colours, Uint8Array);
  var nv=P.length/3, nf=F.length/3;
  var cx=0,cy=0,cz=0; for(var i=0;i<nv;i++){cx+=P[3*i];cy+=P[3*i+1];cz+=P[3*i+2];} cx/=nv;cy/=nv;cz/=nv;
  var R=0; for(i=0;i<nv;i++){var dx=P[3*i]-cx,dy=P[3*i+1]-cy,dz=P[3*i+2]-cz;R=Math.max(R,Math.sqrt(dx*dx+dy*dy+dz*dz));}
  var cv=document.getElementById('viewer'), g=cv.getContext('2d');
  var yaw=0, pitch=0, zoom=1, X=new Float32Array(nv), Y=new Float32Array(nv), Z=new Float32Array(nv);
  var order=new Uint32Array(nf), depth=new Float32Array(nf);
  function draw(){
    var cyw=Math.cos(yaw), syw=Math.sin(yaw), cp=Math.cos(pitch), sp=Math.sin(pitch);
    var s=zoom*0.45*Math.min(cv.width,cv.height)/R;
    for(var i=0;i<nv;i++){
      var x=P[3*i]-cx, y=P[3*i+1]-cy, z=P[3*i+2]-cz;
      // model +z up on screen; start looking along +y (anterior view)
      var x1=cyw*x+syw*y, y1=-syw*x+cyw*y;
      var y2=cp*y1-sp*z, z2=sp*y1+cp*z;
      X[i]=cv.width/2+s*x1; Y[i]=cv.height/2-s*z2; Z[i]=y2;
    }
    for(var f=0;f<nf;f++){order[f]=f; depth[f]=Z[F[3*f]]+Z[F[3*f+1]]+Z[F[3*f+2]];}
    var idx=Array.prototype.slice.call(order); idx.sort(function(a,b){return depth[b]-depth[a];});
    g.fillStyle='#fff'; g.fillRect(0,0,cv.width,cv.height);
    for(var k=0;k<nf;k++){
      f=idx[k]; var a=F[3*f], b=F[3*f+1], c=F[3*f+2];
      var ux=X[b]-X[a], uy=Y[b]-Y[a], wx=X[c]-X[a], wy=Y[c]-Y[a];
      var area=Math.abs(ux*wy-uy*wx)+1e-9;
      var ex=P[3*b]-P[3*a], ey=P[3*b+1]-P[3*a+1], ez=P[3*b+2]-P[3*a+2];
      var fx=P[3*c]-P[3*a], fy=P[3*c+1]-P[3*a+1], fz=P[3*c+2]-P[3*a+2];
      var nx=ey*fz-ez*fy, ny=ez*fx-ex*fz, nz=ex*fy-ey*fx, nn=Math.sqrt(nx*nx+ny*ny+nz*nz)+1e-12;
      var vy=(-syw*nx+cyw*ny), vz=cp*vy-sp*nz; // view-direction component of the normal
      var shade=0.55+0.45*Math.abs(vz/nn);
      var r=Math.round((C[3*a]+C[3*b]+C[3*c])/3*shade), gg=Math.round((C[3*a+1]+C[3*b+1]+C[3*c+1])/3*shade),
          bb=Math.round((C[3*a+2]+C[3*b+2]+C[3*c+2])/3*shade);
      g.fillStyle=g.strokeStyle='rgb('+r+','+gg+','+bb+')';
      g.beginPath(); g.moveTo(X[a],Y[a]); g.lineTo(X[b],Y[b]); g.lineTo(X[c],Y[c]); g.closePath();
      g.fill(); if(area<400) g.stroke();
    }
  }
  var drag=null;
  cv.addEventListener('pointerdown',function(e){drag=[e.clientX,e.clientY];cv.setPointerCapture(e.pointerId);});
  cv.addEventListener('pointerup',function(){drag=null;});
  cv.addEventListener('pointermove',function(e){ if(!drag)return;
    yaw+=(e.clientX-drag[0])*0.01; pitch=Math.max(-1.5,Math.min(1.5,pitch+(e.clientY-drag[1])*0.01));
    drag=[e.clientX,e.clientY]; draw();});
  cv.addEventListener('wheel',function(e){e.preventDefault(); zoom*=Math.exp(-e.deltaY*0.001); draw();},
    {passive:false});
  document.querySelectorAll('button[data-yaw]').forEach(function(btn){btn.addEventListener('click',function(){
    yaw=parseFloat(btn.dataset.yaw); pitch=0; draw();});});
  draw();
  document.getElementById('viewer-status').textContent='3D view: '+nv+' vertices, '+nf+' triangles';
  document.body.setAttribute('data-rendered','1');
  console.log('"""
    + READY_MESSAGE
    + r"""');
})();
"""
)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (int, str)):
        return html.escape(str(v))
    if isinstance(v, dict):
        return _table(v)
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, dict) for x in v):
            keys = list(dict.fromkeys(k for x in v for k in x))
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
            rows = "".join("<tr>" + "".join(f"<td>{_fmt(x.get(k, ''))}</td>" for k in keys) + "</tr>" for x in v)
            return f"<table><tr>{head}</tr>{rows}</table>"
        if len(v) > 12:
            return html.escape(f"[{len(v)} values]")
        return ", ".join(_fmt(x) for x in v)
    return html.escape(str(v))


def _table(d: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def _png(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def write_report(path, *, title: str, summary: dict, pictures: dict | None = None, mesh=None) -> Path:
    """Write the HTML report of one case (atomic); it opens offline, all content inline.

    Args:
        path: output ``.html``.
        title: page title.
        summary: the case's JSON summary (see :func:`bayesshape.write_summary`); its
            ``reliability``, ``error_mm``, ``uncertainty_mm``, ``measurements``,
            ``posterior`` (diagnostics), ``inputs``, ``settings`` and ``versions``
            become sections.
        pictures: caption -> PNG path, embedded as data URIs.
        mesh: optional ``dict(vertices (N, 3), faces (F, 3), colours (N, 3) uint8,
            label str, vmax float)`` for the interactive 3D view (drag to rotate, wheel
            to zoom).

    Example:
        >>> write_report("out/report.html", title="case 1", summary=s,
        ...              pictures={"mesh": "out/mesh.png"})  # doctest: +SKIP
    """
    path = Path(path)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    rel = summary.get("reliability")
    if rel:
        ok = bool(rel.get("reliable"))
        text = verdict_sentence(rel)
        parts.append(f"<p class='verdict {'ok' if ok else 'bad'}'>{html.escape(text)}</p>")
    if mesh is not None:
        v = np.ascontiguousarray(mesh["vertices"], dtype="<f4")
        f = np.ascontiguousarray(mesh["faces"], dtype="<u4")
        c = np.ascontiguousarray(mesh["colours"], dtype=np.uint8)
        if c.shape != v.shape:
            raise ValueError(f"mesh colours: expected shape {v.shape}, got {c.shape}")
        payload = json.dumps(
            {
                k: base64.b64encode(a.tobytes()).decode("ascii")
                for k, a in (("vertices", v), ("faces", f), ("colours", c))
            }
        )
        label = html.escape(str(mesh.get("label", "")))
        vmax = float(mesh.get("vmax", 1.0))
        parts.append(
            "<h2>Confidence mesh</h2>"
            "<p class='muted'>Drag to rotate, scroll to zoom. Colour: "
            + label
            + f", viridis, 0 mm (dark blue) to {vmax:.3g} mm (yellow) and above.</p>"
            "<div class='cbar'></div><p><button data-yaw='0'>anterior</button> "
            "<button data-yaw='1.5708'>lateral</button> <button data-yaw='3.1416'>posterior</button> "
            "<button data-yaw='-1.5708'>medial</button></p>"
            "<canvas id='viewer' width='640' height='640'></canvas>"
            "<p id='viewer-status' class='muted'>3D view: needs JavaScript</p>"
            f"<script type='application/json' id='mesh-data'>{payload}</script>"
            f"<script>{_VIEWER_JS}</script>"
        )
    sections = (
        ("Accuracy against the truth (mm)", "error_mm"),
        ("Uncertainty (mm)", "uncertainty_mm"),
        ("Reliability", "reliability"),
        ("Measurements", "measurements"),
        ("Posterior and diagnostics", "posterior"),
        ("Inputs", "inputs"),
        ("Settings", "settings"),
    )
    for name, key in sections:
        if summary.get(key):
            parts.append(f"<h2>{html.escape(name)}</h2>{_fmt(summary[key])}")
    for caption, png in (pictures or {}).items():
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='{_png(png)}'>")
    if summary.get("versions"):
        parts.append(f"<h2>Software</h2>{_fmt(summary['versions'])}")
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(parts), encoding="utf-8")
    return path
