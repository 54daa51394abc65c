"""funcdl's benchmark suite: the same models trained by every framework, side by side.

``cli`` registers ``funcdl bench`` (the ``funcdl.commands`` entry point);
``suite`` plans and runs the cells (each in its own worker process,
``_worker``), ``runners_*`` hold one function per runner, ``_models`` the
models, data and shared initial weights, and ``report`` writes the markdown
table, JSON and PNG chart.
"""
