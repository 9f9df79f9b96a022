"""Instance segmentation over large scenes: seam-exact tiling of detections, instance outputs, COCO interchange.

:func:`geoseg.prediction.predict` routes instance bundles (architecture ``maskrcnn``, or the
``components`` oracle) to :func:`geoseg.instances.predict.predict_instances_scene`. See ``tiled.py``
for the ownership and merge rule. The Mask R-CNN architecture itself is in
:mod:`geoseg.models.maskrcnn`, instance training in :mod:`geoseg.training.instances`.
"""
