#!/usr/bin/env bash
# Debian packages the tests use: GDAL's command-line tools, QGIS with PyQGIS for the
# QGIS round-trip tests (run headless with Debian's /usr/bin/python3) and qgis_process for the
# plugin's, and Chromium for
# the headless-browser check of report.html, and SLURM with munge for the workflow tests'
# single-node cluster (.ci/slurm.sh starts it as plain processes).
set -euo pipefail
need=()
command -v gdalinfo >/dev/null 2>&1 || need+=(gdal-bin)
dpkg -s python3-qgis >/dev/null 2>&1 || need+=(python3-qgis)
dpkg -s qgis-providers >/dev/null 2>&1 || need+=(qgis-providers)
command -v qgis_process >/dev/null 2>&1 || need+=(qgis)  # qgis_process, for the QGIS plugin's tests
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
