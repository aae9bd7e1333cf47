"""Handler for WKSHP-DataVisu101: the student's Jupyter container `datavisulab` on the appliance, as
wod-backend's `create-/cleanup-/reset-WKSHP-DataVisu101.sh` made and removed it (see `_jupyter`).

The appliance provides: the student accounts (in its docker group), docker with compose
v2 or v1, and the image `datavisulab:latest` (built by the installation's
`setup-WKSHP-DataVisu101.sh`), which must have `tini`, `start-notebook.sh`, `jupyter`, `git`
and `/opt/conda/bin/jupyter-nbconvert`, and reach https://github.com/hpe-dev-incubator/HPE-DATAVISU101.git.
"""

from __future__ import annotations

from ._jupyter import JupyterLab

LAB = JupyterLab(
    workshop="WKSHP-DataVisu101",
    name="datavisulab",
    token_var="DATAVISUTOK",
    notebooks_url="https://github.com/hpe-dev-incubator/HPE-DATAVISU101.git",
    extra_ports=(),
    extra_var=None,
)
WORKSHOPS = (LAB.workshop,)
PROVIDES = LAB.provides
IMAGES = LAB.images
create, cleanup, reset = LAB.create, LAB.cleanup, LAB.reset
