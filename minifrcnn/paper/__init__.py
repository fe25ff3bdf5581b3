"""The paper's training schemes and experiments, beside the detector itself.

    alternating.py   4-step alternating training (section 3.2, "Sharing features")
    pretrain.py      the backbone pre-trained as a classifier (our stand-in for ImageNet)
    experiments.py   the paper's experiments in miniature (Tables 2, 8, 9; schemes, sharing)

    python -m minifrcnn train --scheme alternating --dataset shapes --out runs/alt
    python -m minifrcnn pretrain --dataset shapes --out runs/backbone.npz
    python -m minifrcnn experiment lambda
"""
