"""The program of a data-parallel build (`build.build_in_own_program`, which says why it is one):

    python -m poolbench.pretrain.parallel '<the build as JSON: recipe, cache_dir, build options>'

Lightning's DDP launcher starts ranks 1..N-1 by running this module again with the same argument,
so every rank builds the recipe (`build.build_backbone`) and does nothing else.
"""

from __future__ import annotations

import json
import sys

from poolbench.pretrain.build import build_backbone
from poolbench.pretrain.recipe import Recipe


def main(argv: list[str]) -> None:
    build = json.loads(argv[0])
    build_backbone(Recipe(**build["recipe"]), build["cache_dir"], **build["options"])


if __name__ == "__main__":
    main(sys.argv[1:])
