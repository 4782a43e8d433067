-- junction 0.2.0 -> 0.3.0 (ALTER EXTENSION junction UPDATE TO '0.3.0').
-- After it, the extension's objects equal a fresh 0.3.0 install's (test/fault_upgrade.sh checks
-- this, from 0.1.0 through 0.2.0 and from 0.2.0: every difference it finds is named there). Every
-- schema change to src/install after 0.2.0 goes here, in the order of src/install's fragments.
\echo Use "ALTER EXTENSION junction UPDATE" to load this file. \quit
