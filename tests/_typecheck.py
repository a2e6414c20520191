"""The runtime type checker the test run installs on bayesshape (see pyproject's addopts).

beartype with PEP 484's implicit numeric tower: an ``int`` is accepted where a
``float`` is annotated, as every Python user expects.
"""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
