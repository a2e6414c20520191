"""File input and output: model files (own format and Statismo HDF5) and meshes."""

from .mesh import MESH_SUFFIXES, read_mesh, write_mesh
from .native import load_model, save_model
from .statismo import load_statismo, save_statismo
from .vtk import read_vtk_polydata, write_vtk_polydata
from .vtp import read_vtp_polydata, write_vtp_polydata

__all__ = [
    "save_model",
    "load_model",
    "load_statismo",
    "save_statismo",
    "read_mesh",
    "write_mesh",
    "read_vtk_polydata",
    "write_vtk_polydata",
    "read_vtp_polydata",
    "write_vtp_polydata",
    "MESH_SUFFIXES",
]
