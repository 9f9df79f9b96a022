"""The geoseg Processing provider: id ``geoseg``, four algorithms, one setting (the geoseg executable)."""

from qgis.core import QgsProcessingProvider

SETTING = "GEOSEG_EXECUTABLE"


def executable_setting() -> str | None:
    """The executable set in Settings > Options > Processing > Providers > geoseg (None: PATH)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # no Processing plugin: only $GEOSEG_EXECUTABLE and PATH
        return None
    value = ProcessingConfig.getSetting(SETTING)
    return str(value) if value else None


class GeosegProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "geoseg"

    def name(self) -> str:
        return "geoseg"

    def longName(self) -> str:  # noqa: N802
        return "geoseg: segmentation of large GeoTIFFs"

    def load(self) -> bool:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting

            ProcessingConfig.addSetting(Setting(self.name(), SETTING, "geoseg executable (or its virtual "
                                                "environment; empty: geoseg on PATH)", "",
                                                valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        except ImportError:
            pass
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(SETTING)
        except (ImportError, KeyError):
            pass

    def loadAlgorithms(self) -> None:  # noqa: N802
        from .algorithms import ALGORITHMS

        for cls in ALGORITHMS:
            self.addAlgorithm(cls())
