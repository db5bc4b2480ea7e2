"""ament_python package definition for dposer_ros.

Built two ways:
  * ``pip install -e .`` (scripts/bootstrap.sh) -> ``dposer`` command in the venv;
  * ``colcon build`` in ros_ws/ (src/dposer_ros is a symlink to this folder) ->
    ``ros2 run dposer_ros refine_node`` and ``ros2 launch dposer_ros ...`` on a ROS 2 install.
"""
import os
import re
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "dposer_ros"
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "package.xml")) as _f:  # the version lives in package.xml (ROS needs it there)
    VERSION = re.search(r"<version>([^<]+)</version>", _f.read()).group(1)


def _files(pattern):
    """Relative paths of the regular files matching ``pattern`` (sorted, repo-relative)."""
    return sorted(
        os.path.relpath(p, HERE)
        for p in glob(os.path.join(HERE, pattern))
        if os.path.isfile(p)
    )


def _tree(folder, suffixes):
    """data_files entries for every file with one of ``suffixes`` under ``folder``,
    keeping the sub-folder layout below share/<pkg>/<folder>/. The top folder's entry is
    always present (possibly empty), even when the folder does not exist."""
    entries = {os.path.join("share", PACKAGE_NAME, folder): []}
    for dirpath, dirnames, filenames in os.walk(os.path.join(HERE, folder)):
        dirnames.sort()
        files = sorted(
            os.path.relpath(os.path.join(dirpath, f), HERE)
            for f in filenames
            if f.endswith(suffixes)
        )
        if files:
            entries[os.path.join("share", PACKAGE_NAME, os.path.relpath(dirpath, HERE))] = files
    return list(entries.items())


data_files = [
    ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE_NAME]),
    ("share/" + PACKAGE_NAME, ["package.xml"]),
    ("share/" + PACKAGE_NAME + "/launch", _files("launch/*.py")),
] + _tree("config", (".yaml", ".yml", ".rviz")) + [
    # shipped models with their sub-folders; models/engines/ (ONNX/TensorRT files built per machine) is not shipped
    (d, f) for d, f in _tree("models", (".pt", ".npz", ".yaml", ".md", ".png", ".json"))
    if not d.startswith(os.path.join("share", PACKAGE_NAME, "models", "engines"))
]

setup(
    name=PACKAGE_NAME,
    version=VERSION,
    packages=find_packages(where=HERE, exclude=["tests", "tests.*"]),
    package_data={"": ["*.json", "*.yaml", "*.yml", "*.npz"]},
    include_package_data=False,
    data_files=data_files,
    python_requires=">=3.10",
    # torch: scripts/bootstrap.sh installs the pinned CPU build (torch==2.13.0) before this
    # package, so the bare name below is already satisfied and pulls nothing more.
    # what the prior, the solvers and the node need; the rest are extras (scripts/requirements.txt installs all)
    install_requires=[
        "numpy",
        "scipy",
        "torch",
        "roma",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "onnx": ["onnx", "onnxruntime"],
        "ros": ["rosbags", "mcap"],
        "smplx": ["smplx"],  # the exact body model, for users with the licensed SMPL-X files
        "plots": ["matplotlib", "mannequin-x"],  # pictures, evaluation plots, the mesh markers
        "train": ["scikit-learn", "matplotlib"],  # the GMM baseline, training curves
        "test": ["pytest", "pytest-timeout", "bvhio", "ruff"],
    },
    zip_safe=False,
    maintainer="dposer_ros maintainers",
    maintainer_email="dposer@example.com",
    description="Real-time whole-body SMPL-X pose refinement for ROS 2 with a learned diffusion pose prior.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "dposer = dposer_ros.cli:main",
            "refine_node = dposer_ros.ros.refine_node:run",
            "refine_lifecycle_node = dposer_ros.ros.refine_node:run_lifecycle",
        ],
    },
)
