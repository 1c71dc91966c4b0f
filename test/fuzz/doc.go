// Package fuzz holds fuzz targets over nodefw's public compiler API: the
// rule checks and the compiler must agree and never panic on any input, and
// no ruleset, whatever its rules, may drop a packet to a failsafe port.
//
// `make fuzz` runs every fuzz target of the module for FUZZTIME each (30s
// by default); a plain `go test` runs the seed corpora only. One target:
//
//	go test ./test/fuzz/ -run '^$' -fuzz '^FuzzValidateRule$' -fuzztime 30s -fuzzminimizetime 5s
package fuzz
