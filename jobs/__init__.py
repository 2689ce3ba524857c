"""Jobs that drive the whole product: ``kdaliens-quickstart`` (train, export, profile, demo, report).

They sit above the three parts (``sdk`` <- ``training`` <- ``export`` <- ``jobs``) and
hold no model, export or device logic of their own.
"""
