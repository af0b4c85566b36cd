"""The backends: the frameworks behind one protocol (``protocol``): the PyTorch reference and
its instruments (``torch/``), Keras 3 on every backend (``keras/``), tf.keras 2
(``tf_keras``), which Keras a port needs (``which_keras``), loading a port and holding its
weights (``ports``, ``weights``). The only layer that imports Keras, TensorFlow, JAX or
PyTorch; it imports ``parity.core`` and nothing above.
"""
