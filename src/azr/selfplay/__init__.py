"""Self-play with no gradients: the step, the records it hands on, its log, its demonstrations, the seeding stage.

- :mod:`azr.selfplay.step`: :class:`SelfPlay`, one step: propose -> validate -> solve -> score -> TRR++;
- :mod:`azr.selfplay.samples`: :class:`Sample` and :class:`StepResult`, what a step hands to the update;
- :mod:`azr.selfplay.step_log`: a step's rollout-log rows and metrics;
- :mod:`azr.selfplay.demonstrations`: worked demonstrations in prompts, sandbox traces, sandbox-written solves;
- :mod:`azr.selfplay.seeding`: filling the task buffers with seed tasks before RL.

Importing the package imports nothing: each module is imported by name. It never imports :mod:`azr.training`.
"""
