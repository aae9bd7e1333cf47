"""Handler for WKSHP-Spark101: the student's Jupyter container `sparklab` on the appliance, as
wod-backend's `create-/cleanup-/reset-WKSHP-Spark101.sh` made and removed it (see `_jupyter`).

The appliance provides: the student accounts (in its docker group), docker with compose
v2 or v1, and the image `sparklab:latest` (built by the installation's
`setup-WKSHP-Spark101.sh`), which must have `tini`, `start-notebook.sh`, `jupyter`, `git`
and `/opt/conda/bin/jupyter-nbconvert`, and reach https://github.com/hpe-container-platform-community/Apache-Spark-Tutorials.
"""

from __future__ import annotations

from ._jupyter import JupyterLab

LAB = JupyterLab(
    workshop="WKSHP-Spark101",
    name="sparklab",
    token_var="SPARKTOK",
    notebooks_url="https://github.com/hpe-container-platform-community/Apache-Spark-Tutorials",
    extra_ports=(('SPARKPORT-WKSHP-Spark101', 4040), ('SPARKPORT2-WKSHP-Spark101', 4041)),
    extra_var='SPARKPORT',
)
WORKSHOPS = (LAB.workshop,)
PROVIDES = LAB.provides
IMAGES = LAB.images
create, cleanup, reset = LAB.create, LAB.cleanup, LAB.reset
