"""Benchmarks of TerraCodec against JPEG 2000 and JPEG XL on real Sentinel-2 imagery.

Scripts (each has ``--help`` and a ``main(argv)`` function):

* ``codec_speed.py``: encode/decode throughput and rate of 256 and 1024 pixel chunks;
* ``rd_benchmark.py``: rate-distortion curves and Bjontegaard deltas on any imagery
  (``--refinement-steps`` adds curves with encoder-side latent refinement);
* ``refinement_search.py``: rate and PSNR of latent refinement over a grid of steps and step sizes;
* ``bounds_benchmark.py``: lossless and error-bounded (``max_error``) rates against JPEG 2000 and
  JPEG XL tuned to the same per-pixel bounds.

The other modules are what the scripts share: reading imagery (:mod:`benchmarks.sentinel2`),
the codecs under one interface (:mod:`benchmarks.coders`), distortion metrics and BD-rate
(:mod:`benchmarks.metrics`), timing (:mod:`benchmarks.timing`) and report writing
(:mod:`benchmarks.reporting`).
"""
