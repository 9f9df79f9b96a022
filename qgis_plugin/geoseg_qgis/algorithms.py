"""The Processing algorithms: each builds geoseg's argument list from QGIS parameters and runs it.

Parameter names are upper case (``INPUT``, ``MODEL``, ``OUTPUT``, ...), defaults and help texts follow the
command line's. Layers must be local files; a web basemap or a memory layer is refused with one line.
"""

from __future__ import annotations

import os
import sqlite3

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from . import runner

ENGINES = ["auto", "torch", "openvino", "onnxruntime"]


def local_file(alg, parameters, name: str, context) -> str:
    """The file behind a raster-layer parameter; one clear line when the layer is not a local file."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        raise QgsProcessingException(f"{name}: no raster layer given")
    source = layer.source().split("|")[0]
    if layer.providerType() != "gdal" or not os.path.isfile(source):
        raise QgsProcessingException(f"{name}: layer '{layer.name()}' is not a local raster file "
                                     f"({layer.providerType()} source); geoseg reads GeoTIFFs on disk and XYZ "
                                     "basemaps (with EXTENT): save the layer as a GeoTIFF first")
    return source


def xyz_service(layer) -> str | None:
    """A GDAL WMS service description (TMS) for a QGIS XYZ tile layer, or None for any other layer."""
    from urllib.parse import parse_qsl

    if layer.providerType() != "wms":
        return None
    params = dict(parse_qsl(layer.source(), keep_blank_values=True))
    if params.get("type") != "xyz" or not params.get("url"):
        return None
    url = params["url"].replace("{z}", "${z}").replace("{x}", "${x}").replace("{y}", "${y}")
    url = url.replace("&", "&amp;")
    level = int(params.get("zmax", 19))
    world = 20037508.342789244
    return (f"<GDAL_WMS><Service name=\"TMS\"><ServerUrl>{url}</ServerUrl></Service><DataWindow>"
            f"<UpperLeftX>{-world}</UpperLeftX><UpperLeftY>{world}</UpperLeftY><LowerRightX>{world}</LowerRightX>"
            f"<LowerRightY>{-world}</LowerRightY><TileLevel>{level}</TileLevel><TileCountX>1</TileCountX>"
            "<TileCountY>1</TileCountY><YOrigin>top</YOrigin></DataWindow><Projection>EPSG:3857</Projection>"
            "<BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>3</BandsCount></GDAL_WMS>")


def gpkg_layers(path: str) -> list[str]:
    """The feature tables of a GeoPackage (read with the standard library: no OGR round trip needed)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features' "
                                          "ORDER BY table_name")]
    finally:
        con.close()


def load_outputs(files: list[str], context, output_name: str) -> list[str]:
    """Add geoseg's rasters and GeoPackage layers to the project when the algorithm finishes; their styles
    (``NAME.qml`` sidecars, the GeoPackage's layer_styles) load with them."""
    added = []
    for f in files:
        if not os.path.isfile(f):
            continue
        base = os.path.basename(f)
        if f.endswith(".tif"):
            uris = [(f, base[:-4])]
        elif f.endswith(".gpkg"):
            uris = [(f"{f}|layername={n}", f"{base[:-5]} {n}") for n in gpkg_layers(f)]
        else:
            continue
        for uri, name in uris:
            context.addLayerToLoadOnCompletion(uri, QgsProcessingContext.LayerDetails(name, context.project(),
                                                                                     output_name))
            added.append(uri)
    return added


class GeosegAlgorithm(QgsProcessingAlgorithm):
    """Runs ``geoseg <command> ...`` with the arguments :meth:`arguments` builds."""

    command = ""
    title = ""
    help = ""

    def name(self) -> str:
        return self.command

    def displayName(self) -> str:  # noqa: N802
        return self.title

    def group(self) -> str:
        return "geoseg"

    def groupId(self) -> str:  # noqa: N802
        return "geoseg"

    def shortHelpString(self) -> str:  # noqa: N802
        return self.help

    def createInstance(self):  # noqa: N802
        return type(self)()

    def arguments(self, parameters, context) -> list[str]:
        raise NotImplementedError

    def outputs(self, parameters, context, files: list[str]) -> dict:
        return {}

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from .provider import executable_setting

        args = [self.command, *self.arguments(parameters, context)]
        try:
            exe = runner.find_executable(executable_setting())
        except runner.GeosegNotFound as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushCommandInfo(" ".join([exe, *args]))

        def progress(percent: float, task: str) -> None:
            feedback.setProgress(percent)
            if task:
                feedback.setProgressText(task)

        try:
            files = runner.run(exe, args, progress, feedback.pushInfo, feedback.isCanceled)
        except runner.GeosegFailed as exc:
            raise QgsProcessingException(str(exc)) from None
        except InterruptedError as exc:
            raise QgsProcessingException(str(exc)) from None
        for f in files:
            feedback.pushInfo(f)
        return self.outputs(parameters, context, files)


class Predict(GeosegAlgorithm):
    command = "predict"
    title = "Predict"
    help = ("Run a geoseg model over a raster: OUTPUT/NAME.classes.tif (styled), and for models with object "
            "channels NAME.instances.gpkg (one polygon per object). MODEL: a packaged model name (buildings-rgb, "
            "atlanta-buildings) or a bundle folder.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster (a local GeoTIFF)"))
        self.addParameter(QgsProcessingParameterString("MODEL", "Model (packaged name or bundle folder)",
                                                       defaultValue="buildings-rgb"))
        self.addParameter(QgsProcessingParameterEnum("ENGINE", "Engine", options=ENGINES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("CHUNK_SIZE", "Chunk size (pixels)",
                                                       QgsProcessingParameterNumber.Integer, 2048, minValue=64))
        self.addParameter(QgsProcessingParameterBoolean("VECTORIZE", "Also vectorize the class raster (NAME.gpkg)",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean("REGULARIZE", "Square building footprints",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean("PANOPTIC", "Also panoptic output (NAME.panoptic.tif)",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Area to fetch and predict (web basemaps)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputFolder("OUTPUT_FOLDER", "Output folder"))

    def scene(self, parameters, context) -> list[str]:
        """The scene argument: the local file, or for an XYZ basemap its service description and ``--aoi``."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        service = xyz_service(layer) if layer is not None else None
        if service is None:
            return [local_file(self, parameters, "INPUT", context)]
        import json
        import tempfile

        from qgis.core import QgsCoordinateReferenceSystem

        if not parameters.get("EXTENT"):
            raise QgsProcessingException(f"INPUT: '{layer.name()}' is a web basemap: give EXTENT, the area to fetch "
                                         "and predict")
        wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
        r = self.parameterAsExtent(parameters, "EXTENT", context, wgs84)
        folder = tempfile.mkdtemp(prefix="geoseg-webmap-")
        xml = os.path.join(folder, f"{layer.name() or 'basemap'}.xml")
        with open(xml, "w") as f:
            f.write(service)
        aoi = os.path.join(folder, "aoi.geojson")
        ring = [[r.xMinimum(), r.yMinimum()], [r.xMaximum(), r.yMinimum()], [r.xMaximum(), r.yMaximum()],
                [r.xMinimum(), r.yMaximum()], [r.xMinimum(), r.yMinimum()]]
        with open(aoi, "w") as f:
            json.dump({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                       "geometry": {"type": "Polygon", "coordinates": [ring]}}]}, f)
        return [xml, "--aoi", aoi]

    def arguments(self, parameters, context) -> list[str]:
        scene = self.scene(parameters, context)
        model = self.parameterAsString(parameters, "MODEL", context).strip()
        out = self.parameterAsString(parameters, "OUTPUT", context)
        args = [model, *scene, "-o", out, "--engine", ENGINES[self.parameterAsEnum(parameters, "ENGINE", context)],
                "--chunk-size", str(self.parameterAsInt(parameters, "CHUNK_SIZE", context)), "--overwrite"]
        for flag, name in (("--vectorize", "VECTORIZE"), ("--regularize", "REGULARIZE"), ("--panoptic", "PANOPTIC")):
            if self.parameterAsBool(parameters, name, context):
                args.append(flag)
        return args

    def outputs(self, parameters, context, files):
        out = self.parameterAsString(parameters, "OUTPUT", context)
        load_outputs(files, context, "OUTPUT")
        return {"OUTPUT": out, "OUTPUT_FOLDER": out}


class Vectorize(GeosegAlgorithm):
    command = "vectorize"
    title = "Vectorize"
    help = "A class raster to a styled GeoPackage, one layer per class, exact across chunk seams."

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class raster (NAME.classes.tif)"))
        self.addParameter(QgsProcessingParameterNumber("MIN_AREA", "Minimum polygon area (m²)",
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterBoolean("REGULARIZE", "Square building footprints",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean("SPLIT_TOUCHING", "Split touching objects (watershed)",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "GeoPackage", "GeoPackage (*.gpkg)"))

    def arguments(self, parameters, context) -> list[str]:
        args = [local_file(self, parameters, "INPUT", context), "-o",
                self.parameterAsFileOutput(parameters, "OUTPUT", context), "--overwrite",
                "--min-area", str(self.parameterAsDouble(parameters, "MIN_AREA", context))]
        for flag, name in (("--regularize", "REGULARIZE"), ("--split-touching", "SPLIT_TOUCHING")):
            if self.parameterAsBool(parameters, name, context):
                args.append(flag)
        return args

    def outputs(self, parameters, context, files):
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        load_outputs([out], context, "OUTPUT")
        return {"OUTPUT": out}


class Evaluate(GeosegAlgorithm):
    command = "evaluate"
    title = "Evaluate"
    help = ("Score a prediction (class raster, geoseg GeoPackage or NAME.panoptic.tif) against a reference raster "
            "or vector file: OUTPUT/report.html, report.json, report.md and audit.gpkg.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("PREDICTION", "Prediction file"))
        self.addParameter(QgsProcessingParameterFile("REFERENCE", "Reference (raster or vector file)"))
        self.addParameter(QgsProcessingParameterFile("CLASSES", "Class list (YAML; default: the prediction's)",
                                                     optional=True, extension="yaml"))
        self.addParameter(QgsProcessingParameterString("REFERENCE_CLASS", "Every reference feature is this class",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString("CLASS_FIELD", "Reference field holding classes",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterBoolean("PANOPTIC", "Panoptic quality (PQ) too", defaultValue=False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Report folder"))
        self.addOutput(QgsProcessingOutputFolder("OUTPUT_FOLDER", "Report folder"))

    def arguments(self, parameters, context) -> list[str]:
        args = [self.parameterAsFile(parameters, "PREDICTION", context),
                self.parameterAsFile(parameters, "REFERENCE", context),
                "-o", self.parameterAsString(parameters, "OUTPUT", context), "--overwrite"]
        for flag, name in (("--classes", "CLASSES"), ("--reference-class", "REFERENCE_CLASS"),
                           ("--class-field", "CLASS_FIELD")):
            value = self.parameterAsString(parameters, name, context)
            if value:
                args += [flag, value]
        if self.parameterAsBool(parameters, "PANOPTIC", context):
            args.append("--panoptic")
        return args

    def outputs(self, parameters, context, files):
        out = self.parameterAsString(parameters, "OUTPUT", context)
        load_outputs([os.path.join(out, "audit.gpkg")], context, "OUTPUT")
        return {"OUTPUT": out, "OUTPUT_FOLDER": out}


class RunWorkflow(GeosegAlgorithm):
    command = "run"
    title = "Run workflow"
    help = "Run a geoseg workflow file (YAML): its steps in order, resumable; what is done is not run again."

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INPUT", "Workflow file (YAML)", extension="yaml"))
        self.addParameter(QgsProcessingParameterBoolean("FORCE", "Run every step again", defaultValue=False))

    def arguments(self, parameters, context) -> list[str]:
        args = [self.parameterAsFile(parameters, "INPUT", context), "--progress"]
        if self.parameterAsBool(parameters, "FORCE", context):
            args.append("--force")
        return args


ALGORITHMS = (Predict, Vectorize, Evaluate, RunWorkflow)
