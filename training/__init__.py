"""kdaliens.training: the server side. Data, KD-ALIENS teacher and student, distillation.

Importing this package does not import torch; the model and training modules do.
"""
