"""Load geoseg's Processing provider in real QGIS (headless) and run its algorithms; JSON lines out.

Run by tests/test_qgis_plugin.py with Debian's /usr/bin/python3 and QT_QPA_PLATFORM=offscreen:

    python3 qgis_provider_check.py PLUGINS_DIR list
    python3 qgis_provider_check.py PLUGINS_DIR run ALGORITHM PARAMS_JSON [PROVIDER:LAYER_URI]
    python3 qgis_provider_check.py PLUGINS_DIR cancel ALGORITHM PARAMS_JSON
    python3 qgis_provider_check.py PLUGINS_DIR installed     (load it as QGIS loads plugins from a profile)
"""

import json
import sys

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)


def main() -> None:
    plugins, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing

    sys.path.insert(0, plugins)
    if mode == "installed":
        import qgis.utils

        qgis.utils.plugin_paths.insert(0, plugins)
        qgis.utils.updateAvailablePlugins()
        loaded = qgis.utils.loadPlugin("geoseg_qgis")
        started = qgis.utils.startProcessingPlugin("geoseg_qgis")
        provider = QgsApplication.processingRegistry().providerById("geoseg")
        print(json.dumps({"loaded": bool(loaded), "started": bool(started), "provider": provider is not None,
                          "file": sys.modules["geoseg_qgis"].__file__,
                          "algorithms": sorted(a.id() for a in provider.algorithms()) if provider else []}))
        return
    import geoseg_qgis

    plugin = geoseg_qgis.classFactory(None)  # no interface, as qgis_process loads it
    plugin.initProcessing()
    registry = QgsApplication.processingRegistry()
    if mode == "list":
        provider = registry.providerById("geoseg")
        for alg in sorted(provider.algorithms(), key=lambda a: a.id()):
            print(json.dumps({"id": alg.id(), "name": alg.displayName(), "group": alg.group(),
                              "parameters": [[p.name(), p.type(), p.defaultValue() if isinstance(
                                  p.defaultValue(), (str, int, float, bool, type(None))) else str(p.defaultValue()),
                                  bool(p.flags() & p.FlagOptional)] for p in alg.parameterDefinitions()]}))
        return
    alg_id, params = args[0], json.loads(args[1])
    if len(args) > 2:  # INPUT is a web layer: "PROVIDER:URI", made a layer of the project
        provider_key, uri = args[2].split(":", 1)
        layer = QgsRasterLayer(uri, "basemap", provider_key)
        QgsProject.instance().addMapLayer(layer)
        params["INPUT"] = layer

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.progress, self.texts, self.infos = [], [], []

        def setProgressText(self, text):  # noqa: N802
            self.texts.append(text)

        def pushInfo(self, info):  # noqa: N802
            self.infos.append(info)

    feedback = Feedback()
    if mode == "cancel":  # cancel once geoseg reports work done
        feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 0 else None)
    feedback.progressChanged.connect(lambda p: feedback.progress.append(p))
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    try:
        result = processing.run(alg_id, params, feedback=feedback, context=context)
    except QgsProcessingException as exc:
        print(json.dumps({"error": str(exc), "canceled": feedback.isCanceled(), "progress": feedback.progress}))
        return
    layers = []
    for uri, details in context.layersToLoadOnCompletion().items():
        if uri.split("|")[0].endswith(".tif"):
            layer = QgsRasterLayer(uri, details.name)
            renderer = layer.renderer().type() if layer.isValid() else None
        else:
            layer = QgsVectorLayer(uri, details.name, "ogr")
            renderer = layer.renderer().type() if layer.isValid() else None
        layers.append({"uri": uri, "name": details.name, "valid": layer.isValid(), "renderer": renderer})
    print(json.dumps({"result": {k: str(v) for k, v in result.items()}, "layers": layers,
                      "progress": feedback.progress, "texts": feedback.texts, "infos": feedback.infos}))


if __name__ == "__main__":
    main()
