#!/usr/bin/env bash
# fault_upgrade_previous.sh — fault_upgrade.sh from the previous release (0.2.0) alone: its
# install script (src/upgrade/junction--0.2.0.sql, verbatim), with data, updated to the current
# version by the one newest upgrade script, must equal a fresh install.
JX_UPGRADE_FROM=0.2.0 JX_UPGRADE_PORT=${JX_UPGRADE_PORT:-5454} exec bash "$(dirname "$0")/fault_upgrade.sh"
