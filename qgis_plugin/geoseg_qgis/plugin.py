"""The plugin object QGIS loads: it only adds and removes the Processing provider."""

from qgis.core import QgsApplication


class GeosegPlugin:
    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        if self.provider is None:
            from .provider import GeosegProvider

            self.provider = GeosegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
