"""vitlab's Hydra config tree. Installed as the ``vitlab.conf`` package (see pyproject.toml), so a
wheel carries its configs and Hydra finds them as ``pkg://vitlab.conf``."""
