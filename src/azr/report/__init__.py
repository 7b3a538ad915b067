"""The HTML report of one run or several, each a single self-contained file (``azr report``).

- :mod:`azr.report.run`: one run's report (metric charts, task browser, proposal views);
- :mod:`azr.report.compare`: several runs overlaid, their eval scores and the config keys that differ;
- :mod:`azr.report.data`: the task store read defensively; :mod:`azr.report.views`: proposal views;
- :mod:`azr.report.browser` (with ``browser.js``): the task and rollout browser; :mod:`azr.report.charts`: SVG.

Not the evaluation's results file (:mod:`azr.evaluation.results`). Importing the package imports nothing.
"""
