"""Model tiers, the router for `model: "auto"` and the confidence cascade: pure policy.

Nothing here touches a database or an engine. Intake asks `router` which tier a job runs
on; the worker asks `cascade` whether an answer is confident enough to keep; `calibration`
picks the cascade's thresholds from labelled outcomes; `catalog` describes the tiers.
"""
