// Package schematest validates documents against the JSON Schemas in
// docs/schema/ with a real JSON Schema validator
// (github.com/santhosh-tekuri/jsonschema, draft 2020-12, formats asserted).
package schematest

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Dir is docs/schema/ of this repository.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs", "schema")
}

// Compile loads docs/schema/NAME.
func Compile(t testing.TB, name string) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join(Dir(), name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(path, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(path)
	if err != nil {
		t.Fatalf("compiling %s: %v", path, err)
	}
	return s
}

// Check returns the validation error of data against s (nil when valid).
func Check(s *jsonschema.Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

// Valid fails the test when data does not validate against docs/schema/NAME.
func Valid(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := Check(Compile(t, name), data); err != nil {
		t.Errorf("not valid against %s: %v\n%.2000s", name, err, data)
	}
}
