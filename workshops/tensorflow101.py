"""Handler for WKSHP-Tensorflow101: the student's Jupyter container `tensorflowlab` on the
appliance, as wod-backend's `create-/cleanup-/reset-WKSHP-Tensorflow101.sh` made and
removed it (see `_jupyter`).

The appliance provides: the student accounts (in its docker group), docker with compose
v2 or v1, and the image `tensorflowlab:latest` (built by the installation's
`setup-WKSHP-Tensorflow101.sh`), which must have `tini`, `start-notebook.sh`, `jupyter`, `git`
and `/opt/conda/bin/jupyter-nbconvert`, and reach https://github.com/hpe-dev-incubator/HPE-TENSORFLOW101.git.
"""

from __future__ import annotations

from ._jupyter import JupyterLab

LAB = JupyterLab(
    workshop="WKSHP-Tensorflow101",
    name="tensorflowlab",
    token_var="TENSORFLOWTOK",
    notebooks_url="https://github.com/hpe-dev-incubator/HPE-TENSORFLOW101.git",
    extra_ports=(),
    extra_var=None,
)
WORKSHOPS = (LAB.workshop,)
PROVIDES = LAB.provides
IMAGES = LAB.images
create, cleanup, reset = LAB.create, LAB.cleanup, LAB.reset
