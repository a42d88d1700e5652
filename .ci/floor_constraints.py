"""Print pip constraints that pin every dependency of pyproject.toml to its declared lower bound.

CI installs the package under these to prove the floors are real. torch is left out: CI pins the CPU build that
lies on its machines (any other torch spec downloads a multi-GB CUDA build).
"""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
for requirement in map(Requirement, project["dependencies"]):
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if requirement.name != "torch" and floors:
        print(f"{requirement.name}=={floors[0]}")
