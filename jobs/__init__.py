"""Jobs that drive the whole product: ``kdaliens-quickstart`` (train, export, profile, demo, report),
and the golden vectors that prove the Android port of the encoder (:mod:`kdaliens.jobs.golden`, numpy only).

They sit above the three parts (``sdk`` <- ``training`` <- ``export`` <- ``jobs``) and
hold no model, export or device logic of their own.
"""
