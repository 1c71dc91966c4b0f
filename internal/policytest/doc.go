// Package policytest answers "would this packet pass on that node, and
// which rule decides?" for the command line and for tests, from policy
// files or a node's resolved NodeFirewall, through the reference
// semantics (reference.TraceSpec) that the differential tests hold the
// kernel to:
//
//   - Packet describes a packet as a person writes it (`nodefw trace`
//     flags, the cases of a test file, pkg/nodefwtest) and parses it;
//   - ResolveNode resolves policy files for one node, as the controller
//     would;
//   - File and Run are `nodefw test`: cases of expected verdicts, run
//     offline against policy files;
//   - WriteTrace and WriteResults print traces and results as aligned
//     text, coloured on request.
package policytest
