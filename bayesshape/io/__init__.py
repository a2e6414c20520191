"""File input and output: model files (own format and Statismo HDF5), posterior files, view-geometry
files, meshes, landmarks, images and masks, and DICOM radiographs. Every bayesshape file carries a
format tag and a version, checked on reading."""

from .case_inputs import load_inputs, save_inputs
from .dicom import Radiograph, read_radiograph, write_radiograph
from .images import IMAGE_SUFFIXES, read_image, read_mask, write_image, write_mask
from .landmarks import LANDMARK_SUFFIXES, LandmarkSet, read_landmarks, write_landmarks
from .manifest import MANIFEST_COLUMNS, Case, read_manifest
from .mesh import MESH_SUFFIXES, read_mesh, write_mesh
from .native import load_assembly, load_model, save_assembly, save_model
from .posterior import load_posterior, save_posterior
from .statismo import load_statismo, save_statismo
from .views import read_views, view_from_dict, view_to_dict, write_views
from .vtk import read_vtk_polydata, write_vtk_polydata
from .vtp import read_vtp_polydata, write_vtp_polydata

__all__ = [
    "save_model",
    "load_model",
    "save_assembly",
    "load_assembly",
    "load_statismo",
    "save_statismo",
    "save_posterior",
    "load_posterior",
    "read_views",
    "write_views",
    "view_to_dict",
    "view_from_dict",
    "save_inputs",
    "load_inputs",
    "read_mesh",
    "write_mesh",
    "read_vtk_polydata",
    "write_vtk_polydata",
    "read_vtp_polydata",
    "write_vtp_polydata",
    "MESH_SUFFIXES",
    "LandmarkSet",
    "read_landmarks",
    "write_landmarks",
    "LANDMARK_SUFFIXES",
    "read_image",
    "write_image",
    "read_mask",
    "write_mask",
    "IMAGE_SUFFIXES",
    "Radiograph",
    "read_radiograph",
    "write_radiograph",
    "Case",
    "read_manifest",
    "MANIFEST_COLUMNS",
]
