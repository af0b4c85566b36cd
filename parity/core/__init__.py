"""The core: what a module pair, an example, a tolerance policy, a weight layout and an error
are. It imports no framework and nothing of the layers above it (numpy and Hypothesis only):
every other layer, and every pair file, builds on it.
"""
