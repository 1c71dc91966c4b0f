package v1alpha1_test

import (
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestNodeRuleCarriesEveryField guards the one place where a policy's rule
// becomes a node's: NodeFirewallRule has exactly the fields of Rule (same
// name, type and JSON name) plus policy and mode, and Rule.NodeRule copies
// every one of them, so that no rule field is dropped on its way to a node.
func TestNodeRuleCarriesEveryField(t *testing.T) {
	ruleType := reflect.TypeFor[v1alpha1.Rule]()
	nodeType := reflect.TypeFor[v1alpha1.NodeFirewallRule]()

	want := fieldsOf(ruleType)
	want["Policy"] = `string json:"policy"`
	want["Mode"] = `v1alpha1.PolicyMode json:"mode,omitempty"`
	if diff := cmp.Diff(want, fieldsOf(nodeType)); diff != "" {
		t.Fatalf("NodeFirewallRule's fields are not Rule's plus policy and mode (-want +got):\n%s", diff)
	}

	var r v1alpha1.Rule
	rv := reflect.ValueOf(&r).Elem()
	for i := range rv.NumField() {
		fill(t, rv.Field(i))
		if rv.Field(i).IsZero() {
			t.Fatalf("fill left Rule.%s zero", ruleType.Field(i).Name)
		}
	}
	n := r.NodeRule("p", v1alpha1.PolicyModeAudit)
	nv := reflect.ValueOf(n)
	for i := range rv.NumField() {
		name := ruleType.Field(i).Name
		if got, want := nv.FieldByName(name).Interface(), rv.Field(i).Interface(); !reflect.DeepEqual(got, want) {
			t.Errorf("NodeRule: %s = %#v, want %#v", name, got, want)
		}
	}
	if n.Policy != "p" || n.Mode != v1alpha1.PolicyModeAudit {
		t.Errorf("NodeRule: policy %q, mode %q; want p, Audit", n.Policy, n.Mode)
	}
}

// fieldsOf maps each field of struct type t to its type and JSON tag.
func fieldsOf(t reflect.Type) map[string]string {
	out := make(map[string]string, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		out[f.Name] = f.Type.String() + ` json:"` + f.Tag.Get("json") + `"`
	}
	return out
}

// fill sets v, and everything v holds, to a value that is not zero.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.Map:
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k)
		fill(t, e)
		v.Set(reflect.MakeMap(v.Type()))
		v.SetMapIndex(k, e)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i))
		}
	default:
		t.Fatalf("fill: no value for kind %s (%s)", v.Kind(), v.Type())
	}
}
