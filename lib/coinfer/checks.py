"""The assignments' checkers, at their old location: the code lives in
:mod:`coinfer.assignments.checks` (one module per assignment).

Kept so that notebooks written with ``from coinfer import checks`` still work; new notebooks read
``from coinfer.assignments import checks``.
"""

from .assignments.checks import *  # noqa: F401,F403
from .assignments.checks import Check, __all__, _image_pairs  # noqa: F401
