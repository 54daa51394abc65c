"""funcdl's benchmark suite: the same models trained by every framework, side by side.

Not an installed package: ``funcdl bench`` finds this folder next to the
``funcdl`` package of a source checkout. ``suite`` plans and runs the cells
(each in its own worker process, ``_worker``), ``runners_*`` hold one function
per runner, ``_models`` the models, data and shared initial weights, and
``report`` writes the markdown table, JSON and PNG chart.
"""
