"""The three task types, read and written: prompts, reply parsers, proposal validation and seed tasks.

- :mod:`azr.tasks.prompts`: ``build_prompt`` for the six (task type x role) kinds, ``split_induction``;
- :mod:`azr.tasks.parsing`: total parsers ``parse_proposal`` / ``parse_solution`` (never raise);
- :mod:`azr.tasks.validate`: ``validate_proposals`` and ``score_solutions`` on top of the executor;
- :mod:`azr.tasks.seed_tasks`: the identity seed tasks and the import of the reference's seed tasks files.

Import the submodules directly; this package module imports nothing.
"""
