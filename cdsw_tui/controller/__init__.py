"""The controller: the one process per CDSW_TUI_HOME that changes the world."""
