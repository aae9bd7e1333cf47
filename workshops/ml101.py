"""Handler for WKSHP-ML101: the student's Jupyter container `mllab` on the appliance, as
wod-backend's `create-/cleanup-/reset-WKSHP-ML101.sh` made and removed it (see `_jupyter`).

The appliance provides: the student accounts (in its docker group), docker with compose
v2 or v1, and the image `mllab:latest` (built by the installation's
`setup-WKSHP-ML101.sh`), which must have `tini`, `start-notebook.sh`, `jupyter`, `git`
and `/opt/conda/bin/jupyter-nbconvert`, and reach https://github.com/snowch/ml-101.
"""

from __future__ import annotations

from ._jupyter import JupyterLab

LAB = JupyterLab(
    workshop="WKSHP-ML101",
    name="mllab",
    token_var="MLTOK",
    notebooks_url="https://github.com/snowch/ml-101",
    extra_ports=(('MLPORT-WKSHP-ML101', 4040), ('MLPORT2-WKSHP-ML101', 4041)),
    extra_var=None,
)
WORKSHOPS = (LAB.workshop,)
PROVIDES = LAB.provides
IMAGES = LAB.images
create, cleanup, reset = LAB.create, LAB.cleanup, LAB.reset
