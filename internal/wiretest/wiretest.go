// Package wiretest helps tests prove that a conversion between an internal type and its wire
// type (package api) carries every field: Filled sets every field a value reaches to a distinct
// non-zero value, and SameJSON compares two values' encodings.
package wiretest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// Fill sets every field v reaches to a distinct non-zero value, so that a field a conversion
// drops (or an omitempty one) shows in the JSON; n numbers the values.
func Fill(t testing.TB, v reflect.Value, n *int) {
	t.Helper()
	*n++
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(int64(1e9+*n), 0).UTC()))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			Fill(t, v.Field(i), n)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		Fill(t, v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		Fill(t, v.Index(0), n)
		Fill(t, v.Index(1), n)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		Fill(t, k, n)
		Fill(t, e, n)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	default:
		t.Fatalf("wiretest: no value for a %s", v.Type())
	}
}

// Filled returns a T with every field set (see Fill).
func Filled[T any](t testing.TB) T {
	var v T
	n := 0
	Fill(t, reflect.ValueOf(&v).Elem(), &n)
	return v
}

// SameJSON fails unless internal and wire encode to the same bytes.
func SameJSON(t testing.TB, what string, internal, wire any) {
	t.Helper()
	a, err := json.Marshal(internal)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("%s: the wire JSON changed\n was %s\n now %s", what, a, b)
	}
}
