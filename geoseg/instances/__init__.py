"""Instance segmentation over large scenes: Mask R-CNN bundles, seam-exact tiling, COCO interchange.

``geoseg predict`` routes instance bundles (architecture ``maskrcnn``, or the ``components`` oracle)
here: :func:`geoseg.instances.predict.predict_instances`. See ``tiled.py`` for the ownership and
merge rule.
"""
