package compile

// What the differential tests of package compile_test need of the
// package's insides. They compare Compile with internal/reference, which
// imports this package, so only a test package of its own can import
// both.

// WithMinRunLen returns opts with every run of n simple rules or more in
// sets; 0 leaves the agent's run length.
func WithMinRunLen(opts Options, n int) Options {
	opts.minRunLen = n
	return opts
}

// CheckSets checks what the kernel needs of every set of a ruleset.
var CheckSets = checkSets

// ElementCount is the number of elements in all sets of a ruleset.
var ElementCount = elementCount

// PortBlockWidth is how many ports one port block covers.
const PortBlockWidth = portBlockWidth
