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
from ..export import COLORMAP
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
.cbar{height:14px;width:400px;background:linear-gradient(to right,#440154,#3b528b,#21918c,#5ec962,#fde725)}
#cbar-ticks{position:relative;width:400px;height:1.6em;font-size:.8em;margin-bottom:.6em}
#cbar-ticks span{position:absolute;transform:translateX(-50%);white-space:nowrap;top:0}
#cbar-ticks span:first-child{transform:none}#cbar-ticks span:last-child{transform:translateX(-100%)}
#cbar-ticks span:before{content:'';position:absolute;left:50%;top:-5px;height:5px;border-left:1px solid #333}
#hover{font-size:.9em;min-height:1.2em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666;font-size:.85em}
"""

_VIEWER_JS = (
    r"""
(function(){
  function b64(s, T){var bin=atob(s), u=new Uint8Array(bin.length);
    for(var i=0;i<bin.length;i++)u[i]=bin.charCodeAt(i); return new T(u.buffer);}
  var M=JSON.parse(document.getElementById('mesh-data').textContent);
  var P=b64(M.vertices, Float32Array), F=b64(M.faces, Uint32Array), LUT=b64(M.lut, Uint8Array);
  var fields=M.fields.map(function(f){return {name:f.name, label:f.label, unit:f.unit, vmax:f.vmax,
    values:b64(f.values, Float32Array)};});
  var nv=P.length/3, nf=F.length/3, C=new Uint8Array(3*nv), field=fields[0];
  var cx=0,cy=0,cz=0; for(var i=0;i<nv;i++){cx+=P[3*i];cy+=P[3*i+1];cz+=P[3*i+2];} cx/=nv;cy/=nv;cz/=nv;
  var R=0; for(i=0;i<nv;i++){var dx=P[3*i]-cx,dy=P[3*i+1]-cy,dz=P[3*i+2]-cz;R=Math.max(R,Math.sqrt(dx*dx+dy*dy+dz*dz));}
  var cv=document.getElementById('viewer'), g=cv.getContext('2d'), sel=document.getElementById('field');
  var hover=document.getElementById('hover'), ticks=document.getElementById('cbar-ticks');
  var yaw=0, pitch=0, zoom=1, X=new Float32Array(nv), Y=new Float32Array(nv), Z=new Float32Array(nv);
  var order=new Uint32Array(nf), depth=new Float32Array(nf);
  function fmt(v, unit){return (unit==='%'?(100*v).toFixed(1)+'%':v.toFixed(2)+(unit?' '+unit:''));}
  function setField(name){
    field=fields.filter(function(f){return f.name===name;})[0]||fields[0];
    sel.value=field.name;
    for(var i=0;i<nv;i++){var t=Math.max(0,Math.min(1,field.values[i]/field.vmax)), k=Math.round(255*t);
      C[3*i]=LUT[3*k]; C[3*i+1]=LUT[3*k+1]; C[3*i+2]=LUT[3*k+2];}
    var html=''; for(var j=0;j<=4;j++){var t=field.vmax*j/4;
      html+='<span style="left:'+(25*j)+'%">'+(field.unit==='%'?Math.round(100*t)+'%':
        parseFloat(t.toFixed(2))+(field.unit?' '+field.unit:''))+(j===4?' +':'')+'</span>';}
    ticks.innerHTML=html;
    document.getElementById('field-label').textContent=field.label+' (the top colour includes everything above)';
    document.getElementById('viewer-status').textContent='3D view: '+nv+' vertices, '+nf+' triangles; colour: '+
      field.label;
  }
  function project(){
    var cyw=Math.cos(yaw), syw=Math.sin(yaw), cp=Math.cos(pitch), sp=Math.sin(pitch);
    var s=zoom*0.45*Math.min(cv.width,cv.height)/R;
    for(var i=0;i<nv;i++){
      var x=P[3*i]-cx, y=P[3*i+1]-cy, z=P[3*i+2]-cz;
      // LPS world: +z (superior) up on screen; yaw 0 looks along +y, at the patient's front
      var x1=cyw*x+syw*y, y1=-syw*x+cyw*y;
      var y2=cp*y1-sp*z, z2=sp*y1+cp*z;
      X[i]=cv.width/2+s*x1; Y[i]=cv.height/2-s*z2; Z[i]=y2;
    }
  }
  function marker(){
    // orientation marker: the patient's axes (LPS) as seen from the current direction
    var cyw=Math.cos(yaw), syw=Math.sin(yaw), cp=Math.cos(pitch), sp=Math.sin(pitch), o=[48,cv.height-48];
    [[1,0,0,'L','#c0392b'],[0,1,0,'P','#27ae60'],[0,0,1,'S','#2c64c9']].forEach(function(a){
      var x1=cyw*a[0]+syw*a[1], y1=-syw*a[0]+cyw*a[1], z2=sp*y1+cp*a[2];
      var ex=o[0]+30*x1, ey=o[1]-30*z2;
      g.strokeStyle=g.fillStyle=a[4]; g.lineWidth=2; g.beginPath(); g.moveTo(o[0],o[1]); g.lineTo(ex,ey); g.stroke();
      g.font='bold 12px sans-serif'; g.fillText(a[3], ex+4*(ex-o[0])/31-4, ey+4*(ey-o[1])/31+4);
    });
    g.lineWidth=1;
  }
  function draw(){
    project();
    for(var f=0;f<nf;f++){order[f]=f; depth[f]=Z[F[3*f]]+Z[F[3*f+1]]+Z[F[3*f+2]];}
    var idx=Array.prototype.slice.call(order); idx.sort(function(a,b){return depth[b]-depth[a];});
    g.fillStyle='#fff'; g.fillRect(0,0,cv.width,cv.height);
    var cyw=Math.cos(yaw), syw=Math.sin(yaw), cp=Math.cos(pitch), sp=Math.sin(pitch);
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
    marker();
  }
  function pick(px, py){
    // the vertex under the pointer: within 6 px on screen, the one nearest the viewer
    var best=-1, bz=Infinity;
    for(var i=0;i<nv;i++){var dx=X[i]-px, dy=Y[i]-py; if(dx*dx+dy*dy<36 && Z[i]<bz){bz=Z[i]; best=i;}}
    return best;
  }
  var drag=null;
  cv.addEventListener('pointerdown',function(e){drag=[e.clientX,e.clientY];cv.setPointerCapture(e.pointerId);});
  cv.addEventListener('pointerup',function(){drag=null;});
  cv.addEventListener('pointermove',function(e){
    if(!drag){var rc=cv.getBoundingClientRect(), i=pick((e.clientX-rc.left)*cv.width/rc.width,
      (e.clientY-rc.top)*cv.height/rc.height);
      hover.textContent=i<0?'\u00a0':field.label+': '+fmt(field.values[i], field.unit)+' (vertex '+i+')'; return;}
    yaw+=(e.clientX-drag[0])*0.01; pitch=Math.max(-1.5,Math.min(1.5,pitch+(e.clientY-drag[1])*0.01));
    drag=[e.clientX,e.clientY]; draw();});
  cv.addEventListener('wheel',function(e){e.preventDefault(); zoom*=Math.exp(-e.deltaY*0.001); draw();},
    {passive:false});
  document.querySelectorAll('button[data-yaw]').forEach(function(btn){btn.addEventListener('click',function(){
    yaw=parseFloat(btn.dataset.yaw); pitch=parseFloat(btn.dataset.pitch||'0'); draw();});});
  sel.addEventListener('change',function(){setField(sel.value); draw();});
  // a link to report.html#field=NAME opens with that field
  var m=/field=([A-Za-z_]+)/.exec(window.location.hash);
  setField(m?m[1]:fields[0].name);
  draw();
  document.body.setAttribute('data-rendered','1');
  console.log('"""
    + READY_MESSAGE
    + r"""');
})();
"""
)


# how each key of summary.json is shown: its label, and its unit ("mm", "%" for fractions, "s", "deg",
# "n" for counts, "" for plain numbers and text)
_LABELS: dict[str, tuple[str, str]] = {
    # accuracy
    "vertex_mean": ("Mean vertex error", "mm"),
    "vertex_p95": ("95th percentile of the vertex error", "mm"),
    "vertex_max": ("Largest vertex error", "mm"),
    "coverage_95": ("Vertices whose truth lies inside their 95% credible ball", "%"),
    # uncertainty
    "vertex_std": ("Vertex standard deviation", "mm"),
    "credible_radius_95": ("95% credible radius", "mm"),
    "mean": ("Mean", ""),
    "median": ("Median", ""),
    "max": ("Largest", ""),
    "sd": ("Standard deviation", ""),
    "lower": ("Lower bound", ""),
    "upper": ("Upper bound", ""),
    # reliability
    "reliable": ("Reliable", ""),
    "uncertain": ("Too uncertain", ""),
    "misfitting": ("Fits the data badly", ""),
    "score": ("Ranking score (higher: less reliable)", ""),
    "tolerance_mm": ("Clinical tolerance", "mm"),
    "level": ("Credible level", "%"),
    "fraction_vertices_flagged": ("Vertices whose credible radius exceeds the tolerance", "%"),
    "max_fraction": ("Share of such vertices allowed", "%"),
    "mean_credible_radius_mm": ("Mean credible radius", "mm"),
    "max_credible_radius_mm": ("Largest credible radius", "mm"),
    "misfit_threshold": ("Misfit above which an observation is flagged", ""),
    "misfit": ("Misfit per observation", ""),
    "type": ("Observation", ""),
    "n_data": ("Data", "n"),
    "mean_sq_std_residual": ("Misfit (mean squared standardised residual; about 1 when the data fit)", ""),
    # solver
    "method": ("Method", ""),
    "n_samples": ("Posterior samples", "n"),
    "chains": ("Chains", "n"),
    "draws": ("Draws per chain", "n"),
    "n_modes": ("Shape modes", "n"),
    "pose": ("Pose", ""),
    "diagnostics": ("Diagnostics", ""),
    "n_params": ("Parameters", "n"),
    "map_log_density": ("Log density at the MAP", ""),
    "map_iterations": ("L-BFGS iterations to the MAP", "n"),
    "map_newton_decrement": ("Newton decrement at the MAP (small: converged)", ""),
    "map_newton_steps": ("Gauss-Newton steps", "n"),
    "map_warm_start": ("Warm start", ""),
    "composite_weights": ("Composite-likelihood weights", ""),
    "laplace_hessian": ("Hessian of the Laplace approximation", ""),
    "wall_time_s": ("Wall time", "s"),
    "warnings": ("Warnings", ""),
    "num_chains": ("Chains", "n"),
    "num_samples": ("Draws per chain", "n"),
    "num_warmup": ("Warm-up draws per chain", "n"),
    "nuts_mass": ("Mass matrix", ""),
    "divergences": ("Divergent transitions", "n"),
    "mean_num_steps": ("Mean leapfrog steps per draw", ""),
    "max_tree_depth": ("Tree-depth limit", "n"),
    "tree_depth_saturated": ("Draws at the tree-depth limit", "%"),
    "max_rhat": ("Largest R-hat (below 1.01: chains agree)", ""),
    "min_ess_bulk": ("Smallest bulk effective sample size", ""),
    "min_ess_tail": ("Smallest tail effective sample size", ""),
    "ess": ("Effective sample size", ""),
    "khat": ("Pareto k-hat (above 0.7: unreliable)", ""),
    "rounds": ("Rounds", "n"),
    "samples": ("Samples", "n"),
    "converged": ("Converged", ""),
    "final_loss": ("Final loss", ""),
    "steps": ("Steps", "n"),
    # inputs and settings
    "model": ("Model file", ""),
    "views": ("View geometry", ""),
    "kind": ("Input", ""),
    "likelihood": ("Likelihood", ""),
    "files": ("Files", ""),
    "landmarks": ("Landmark files", ""),
    "model_landmarks": ("Model landmarks", ""),
    "seed": ("Seed", ""),
    "sigma": ("Noise sd per observation", ""),
    "drr_pixel": ("DRR pixels", ""),
    "colour_scale": ("Colour scale", ""),
}

# diagnostics that are lists of one value per parameter: too long to show
_PER_PARAMETER = {"rhat", "ess_bulk", "loss"}


def _label(key) -> tuple[str, str]:
    key = str(key)
    if key in _LABELS:
        return _LABELS[key]
    if key.endswith("_mm"):
        return key[:-3].replace("_", " ").capitalize(), "mm"
    if key.endswith("_deg"):
        return key[:-4].replace("_", " ").capitalize(), "deg"
    return key.replace("_", " ").capitalize(), ""


def _number(v, unit: str) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if unit == "%":
        return f"{100 * float(v):.1f}%"
    if unit == "n" or (isinstance(v, int) and not unit):
        return f"{int(v):,}"
    text = f"{float(v):.3g}" if abs(float(v)) < 1e5 else f"{float(v):.4g}"
    return text + {"mm": " mm", "s": " s", "deg": "\u00b0"}.get(unit, "")


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "\u2013"
    if isinstance(v, bool) or isinstance(v, (int, float)):
        return html.escape(_number(v, unit))
    if isinstance(v, str):
        return html.escape(v)
    if isinstance(v, dict):
        if set(v) >= {"mean", "lower", "upper"}:  # a measurement: mean, sd and credible interval
            level = float(v.get("level", 0.95))
            sd = f" (sd {_number(v['sd'], unit)})" if "sd" in v else ""
            return html.escape(
                f"{_number(v['mean'], unit)}{sd}; {100 * level:.0f}% credible interval "
                f"{_number(v['lower'], unit)} to {_number(v['upper'], unit)}"
            )
        return _table(v, unit)
    if isinstance(v, (list, tuple)):
        if not v:
            return "none"
        if all(isinstance(x, dict) for x in v):
            keys = list(dict.fromkeys(k for x in v for k in x))
            head = "".join(f"<th>{html.escape(_label(k)[0])}</th>" for k in keys)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_fmt(x.get(k), _label(k)[1])}</td>" for k in keys) + "</tr>" for x in v
            )
            return f"<table><tr>{head}</tr>{rows}</table>"
        if len(v) > 12:
            return html.escape(f"{len(v)} values")
        return ", ".join(_fmt(x, unit) for x in v)
    return html.escape(str(v))


def _table(d: dict, unit: str = "") -> str:
    rows = []
    for k, v in d.items():
        if k in _PER_PARAMETER:
            continue
        label, own = _label(k)
        u = own or unit
        if isinstance(v, dict) and set(v) <= {"mean", "median", "max"}:  # a statistic over the vertices
            cells = ", ".join(f"{_label(s)[0].lower()} {_number(x, u)}" for s, x in v.items())
            rows.append(f"<tr><th>{html.escape(label)}</th><td class='num'>{html.escape(cells)}</td></tr>")
            continue
        cls = " class='num'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        rows.append(f"<tr><th>{html.escape(label)}</th><td{cls}>{_fmt(v, u)}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _png(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def write_report(path, *, title: str, summary: dict, pictures: dict | None = None, mesh=None) -> Path:
    """Write the HTML report of one case (atomic); it opens offline, all content inline.

    The page shows the verdict, then the clinical figures (accuracy against a truth,
    uncertainty, reliability, measurements) with their units, the interactive 3D view, the
    pictures, and apart from these the solver's diagnostics, the inputs and settings, and the
    software versions.

    Args:
        path: output ``.html``.
        title: page title.
        summary: the case's JSON summary (see :func:`bayesshape.export.write_summary`).
        pictures: caption -> PNG path, embedded as data URIs.
        mesh: optional ``dict(vertices (N, 3), faces (F, 3), fields)`` for the 3D view, where
            ``fields`` is a list of ``dict(name, label, unit, vmax, values (N,))``: the fields
            the view can colour by (on viridis from 0 to ``vmax``), the first shown first. Drag
            to rotate, scroll to zoom, hover for a vertex's value; ``report.html#field=NAME``
            opens with that field.

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
    clinical = (
        ("Accuracy against the truth", "error_mm"),
        ("Uncertainty", "uncertainty_mm"),
        ("Reliability", "reliability"),
        ("Measurements", "measurements"),
    )
    for name, key in clinical:
        if summary.get(key):
            unit = "mm" if key.endswith("_mm") else ""
            parts.append(f"<h2>{html.escape(name)}</h2>{_table(summary[key], unit)}")
    if summary.get("objects"):  # an assembly: one line per object, then the joint angles
        rows = [{"object": name, **v} for name, v in summary["objects"].items()]
        for r in rows:
            r["credible_radius_95_mm"] = r.pop("credible_radius_95", None)
            r["misfit of its own pixels"] = r.pop("misfit", None)
            r["p-value of that misfit against the others'"] = r.pop("misfit_p_value", None)
        parts.append(f"<h2>Objects of the assembly</h2>{_fmt(rows)}")
    if summary.get("posture_deg"):
        rows = [
            {
                "joint angle": name,
                "mean_deg": v.get("mean"),
                "sd_deg": v.get("sd"),
                "95% interval from_deg": v.get("lo_95"),
                "to_deg": v.get("hi_95"),
            }
            for name, v in summary["posture_deg"].items()
        ]
        parts.append(f"<h2>Posture: joint angles (posterior mean, sd, 95% credible interval)</h2>{_fmt(rows)}")
    if mesh is not None:
        parts.append(_viewer(mesh))
    for caption, png in (pictures or {}).items():
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='{_png(png)}'>")
    parts.append("<h2>Solver diagnostics</h2>")
    parts.append(_table(summary["posterior"]) if summary.get("posterior") else "<p>none recorded</p>")
    for name, key in (("Inputs", "inputs"), ("Settings", "settings"), ("Software", "versions")):
        if summary.get(key):
            parts.append(f"<h2>{html.escape(name)}</h2>{_table(summary[key])}")
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(parts), encoding="utf-8")
    return path


def _viewer(mesh: dict) -> str:
    from matplotlib import colormaps

    v = np.ascontiguousarray(mesh["vertices"], dtype="<f4")
    f = np.ascontiguousarray(mesh["faces"], dtype="<u4")
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"mesh vertices: expected shape (N, 3), got {v.shape}")
    fields = []
    for fd in mesh["fields"]:
        vals = np.ascontiguousarray(fd["values"], dtype="<f4")
        if vals.shape != (v.shape[0],) or not np.all(np.isfinite(vals)):
            raise ValueError(f"mesh field {fd['name']!r}: expected {v.shape[0]} finite values, got shape {vals.shape}")
        fields.append(
            {
                "name": str(fd["name"]),
                "label": str(fd["label"]),
                "unit": str(fd.get("unit", "")),
                "vmax": float(fd["vmax"]),
                "values": base64.b64encode(vals.tobytes()).decode("ascii"),
            }
        )
    if not fields:
        raise ValueError("mesh: expected at least one field to colour by")
    lut = (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    payload = json.dumps(
        {
            "vertices": base64.b64encode(v.tobytes()).decode("ascii"),
            "faces": base64.b64encode(f.tobytes()).decode("ascii"),
            "lut": base64.b64encode(lut.tobytes()).decode("ascii"),
            "fields": fields,
        }
    )
    options = "".join(
        f"<option value='{html.escape(str(fd['name']))}'>{html.escape(str(fd['label']))}</option>" for fd in fields
    )
    views = (
        ("from the front (anterior)", 0.0, 0.0),
        ("from the patient's left", 1.5708, 0.0),
        ("from the back (posterior)", 3.1416, 0.0),
        ("from the patient's right", -1.5708, 0.0),
        ("from above", 0.0, 1.5),
    )
    buttons = " ".join(
        f"<button data-yaw='{yaw}' data-pitch='{pitch}'>{html.escape(name)}</button>" for name, yaw, pitch in views
    )
    return (
        "<h2>Confidence mesh</h2>"
        "<p class='muted'>Drag to rotate, scroll to zoom, point at the surface for a vertex's value. "
        "World frame LPS: L = the patient's left (+x), P = posterior (+y), S = superior (+z).</p>"
        f"<p><label>Colour by <select id='field'>{options}</select></label> "
        "<span id='field-label' class='muted'></span></p>"
        "<div class='cbar'></div><div id='cbar-ticks'></div>"
        f"<p>{buttons}</p>"
        "<canvas id='viewer' width='640' height='640'></canvas>"
        "<p id='hover'>\u00a0</p>"
        "<p id='viewer-status' class='muted'>3D view: needs JavaScript</p>"
        f"<script type='application/json' id='mesh-data'>{payload}</script>"
        f"<script>{_VIEWER_JS}</script>"
    )
