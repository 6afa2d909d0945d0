"""Installable core of covid-mtl (import name ``covid_mtl``).

Pins are the set measured to install and run together on Python 3.11 with MONAI Label 0.8.5:
pydicom 2 because pydicom-seg (imported by monailabel) breaks on pydicom 3, numpy 1 because
monailabel's pydicom-seg and numpymaxflow break on numpy 2, and the pylibjpeg releases that still
accept numpy 1 (newer ones pull numpy 2).
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "monailabel==0.8.5",
    "torch<=2.14.1",
    "numpy>=1.24,<2",
    "pydicom==2.4.4",
    "dicomweb-client<0.60",
    "pynetdicom<3",
    "pylibjpeg>=2.0,<2.2",
    "pylibjpeg-libjpeg>=2.1,<2.3",
    "pylibjpeg-openjpeg>=2.1,<2.4",
    "highdicom==0.22.0",
    "nibabel>=5",
    "pynrrd>=1.0",
    "scikit-image>=0.21",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "pillow>=9",
]

# `covid-mtl analyze --ray`: archive analysis on a Ray cluster. Optional, so the base install stays lean.
RAY_REQUIRES = ["ray>=2.50,<2.61"]

TEST_REQUIRES = RAY_REQUIRES + [
    "pytest>=7",
    "requests>=2.28",
    "slicer-core>=5.12",
    # tests/web drives Debian's /usr/bin/chromium (installed by the Makefile); the wheel carries its own driver
    # and nothing else is fetched (never `playwright install`). The web app itself lives in .venv-web.
    "playwright==1.65.2",
]

setup(
    name="covid-mtl",
    version="0.1.0",
    description="Multi-task COVID-19 CT classification and lesion segmentation (Amyar et al. 2020) "
    "for MONAI Label and 3D Slicer",
    python_requires=">=3.10",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    include_package_data=True,
    package_data={"covid_mtl": ["nets/models/*.pt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"ray": RAY_REQUIRES, "test": TEST_REQUIRES},
    entry_points={"console_scripts": ["covid-mtl=covid_mtl.cli:main"]},
)
