package controllers

import (
	"encoding/json"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// statusPatch is the JSON merge patch that takes an object's status from
// old to cur: the status fields that differ, and resourceVersion, so that
// the API server refuses it with a conflict when the object changed since
// it was read. It never carries the spec.
func statusPatch(resourceVersion string, old, cur any) ([]byte, error) {
	from, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	to, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	diff, err := jsonpatch.CreateMergePatch(from, to)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"metadata": map[string]string{"resourceVersion": resourceVersion},
		"status":   json.RawMessage(diff),
	})
}
