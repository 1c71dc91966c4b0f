package compile

import (
	"reflect"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestRulesetEqual compares compiled rulesets, and fails when a field is
// added to the model without being compared.
func TestRulesetEqual(t *testing.T) {
	for typ, fields := range map[reflect.Type]int{
		reflect.TypeFor[Ruleset](): 5, reflect.TypeFor[Chain](): 5, reflect.TypeFor[Rule](): 19,
		reflect.TypeFor[Set](): 8, reflect.TypeFor[SetElement](): 5, reflect.TypeFor[Log](): 4,
		// Compared with ==.
		reflect.TypeFor[Meter](): 3, reflect.TypeFor[RateLimit](): 4, reflect.TypeFor[ConnLimit](): 2,
		reflect.TypeFor[ICMPTypeCode](): 3,
	} {
		if typ.NumField() != fields {
			t.Errorf("%v has %d fields, Ruleset.Equal compares %d", typ, typ.NumField(), fields)
		}
	}
	spec := bigSpec(600, 200, 1)
	opts := Options{SetLookups: true, FailsafeInbound: DefaultFailsafeInbound()}
	a, err := Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) || !reflect.DeepEqual(a, b) {
		t.Fatal("two compilations of one spec differ")
	}
	spec.Rules[300].Ports = []v1alpha1.PortRange{{Port: 61000}}
	c, err := Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.Equal(c) {
		t.Error("a changed port is not a difference")
	}
	d, err := Compile(spec, Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Equal(d) {
		t.Error("other failsafes are not a difference")
	}
	if (*Ruleset)(nil).Equal(a) || !(*Ruleset)(nil).Equal(nil) {
		t.Error("nil rulesets")
	}
}
