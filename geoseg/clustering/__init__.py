"""Unsupervised segmentation of large scenes: k-means on pixel spectra (:mod:`geoseg.clustering.kmeans`)
and SLIC superpixels (:mod:`geoseg.clustering.slic`).

``cluster(inputs, out_dir, ClusterOptions(k=6))`` writes ``NAME.clusters.tif`` (cluster ids, a COG
with a colour map) and ``NAME.clusters.json`` (the fitted model) per scene; ``geoseg cluster`` is the
command over it; ``ClusterOptions(method="slic", segment_size="20m")`` writes ``NAME.segments.gpkg``
(superpixel polygons with their mean band values) and ``NAME.segments.tif`` (their ids) instead.
"""

from geoseg.clustering.kmeans import KMeansModel, fit_kmeans, sample_pixels
from geoseg.clustering.scenes import ClusterOptions, ClusterOutputs, cluster

__all__ = ["ClusterOptions", "ClusterOutputs", "KMeansModel", "cluster", "fit_kmeans", "sample_pixels"]
