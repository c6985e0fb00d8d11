package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// The conversions between the sched and the runtime shapes of a task must carry every field. Each
// test fills every field of the source with a distinct value and checks, by reflection, that
//   - every field of the result is set (but those the conversion leaves to a default, named),
//   - every field of the source changes the result (none is dropped),
//   - fields of the same name and type on both sides hold the same value (none is swapped),
//
// so a field added to either side and not converted fails here. Fields that change name or
// shape are checked one by one.

func TestRuntimeSpecCarriesEveryField(t *testing.T) {
	var in sched.RunSpec
	fill(t, reflect.ValueOf(&in).Elem())
	conv := func(s sched.RunSpec) runtime.Spec { return runtimeSpec(s) }
	out := conv(in)
	checkEveryFieldSet(t, out, "Container.SharedMount") // the runtime's default, /shared
	checkEveryFieldCarried(t, in, conv)
	checkSameNamedFields(t, in, out)
	c := out.Container
	if c.Env != in.ContainerEnv || c.Image != in.Image || c.EnvFile != in.EnvFile ||
		c.DataDir != filepath.Join(in.SharedDir, runtime.SharedDataDir) {
		t.Errorf("container: %+v from %+v", *c, in)
	}
	// A process task has no container.
	in.ContainerEnv, in.Image = "", ""
	if out := runtimeSpec(in); out.Container != nil {
		t.Errorf("a process task got a container: %+v", *out.Container)
	}
}

func TestRunResultCarriesEveryField(t *testing.T) {
	var in runtime.Result
	fill(t, reflect.ValueOf(&in).Elem())
	out := runResult(in)
	checkEveryFieldSet(t, out)
	checkEveryFieldCarried(t, in, runResult)
	checkSameNamedFields(t, in, out)
}

func TestEnvStartCarriesEveryField(t *testing.T) {
	var in runtime.StartInfo
	fill(t, reflect.ValueOf(&in).Elem())
	out := envStart(in)
	checkEveryFieldSet(t, out)
	checkEveryFieldCarried(t, in, envStart)
	checkSameNamedFields(t, in, *out)
	if out.File != in.EnvFile || out.ImageS != in.ImageReady.Seconds() || out.StartS != in.Started.Seconds() {
		t.Errorf("%+v from %+v", *out, in)
	}
	// Without an environment tarball there is nothing to report.
	in.EnvFile = ""
	if out := envStart(in); out != nil {
		t.Errorf("no tarball, yet %+v", *out)
	}
}

func TestRecoveredRunCarriesEveryField(t *testing.T) {
	var in runtime.Adoptee
	fill(t, reflect.ValueOf(&in).Elem())
	out := recoveredRun(in)
	checkEveryFieldSet(t, out)
	checkEveryFieldCarried(t, in, recoveredRun)
	checkSameNamedFields(t, in, out)
	if r, ok := out.Run.(runtimeRun); !ok || r.r != in.Run {
		t.Errorf("Run: %#v from %#v", out.Run, in.Run)
	}
}

// fakeRunning stands for a runtime task in the conversions' tests.
type fakeRunning struct{ n int }

func (fakeRunning) Wait(context.Context) (runtime.Result, error) { return runtime.Result{}, nil }
func (fakeRunning) Kill(context.Context) error                   { return nil }

// fill sets every field of v (recursively) to a value that is not zero and differs from the other
// fields' values.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	n := 0
	var set func(v reflect.Value, path string)
	set = func(v reflect.Value, path string) {
		n++
		switch {
		case v.Type() == reflect.TypeFor[time.Time]():
			v.Set(reflect.ValueOf(time.Unix(int64(1_700_000_000+n), 0)))
			return
		case v.Type() == reflect.TypeFor[runtime.Running]():
			v.Set(reflect.ValueOf(fakeRunning{n}))
			return
		}
		switch v.Kind() {
		case reflect.String:
			v.SetString(fmt.Sprintf("%s-%d", path, n))
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			v.SetInt(int64(n))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			v.SetUint(uint64(n))
		case reflect.Float32, reflect.Float64:
			v.SetFloat(float64(n) + 0.5)
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
			set(v.Index(0), path+"[0]")
		case reflect.Map:
			v.Set(reflect.MakeMap(v.Type()))
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			set(k, path+".key")
			set(e, path+".value")
			v.SetMapIndex(k, e)
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
			set(v.Elem(), path)
		case reflect.Struct:
			for i := range v.NumField() {
				set(v.Field(i), joinPath(path, v.Type().Field(i).Name))
			}
		default:
			t.Fatalf("fill: %s: no value for a %s; teach fill one", path, v.Type())
		}
	}
	set(v, "")
}

// checkEveryFieldSet fails for each field of out (recursively, through pointers) that is zero,
// but those named in defaulted ("Container.SharedMount").
func checkEveryFieldSet(t *testing.T, out any, defaulted ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, p := range defaulted {
		skip[p] = true
	}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		if skip[path] {
			return
		}
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[time.Time]() {
			for i := range v.NumField() {
				walk(v.Field(i), joinPath(path, v.Type().Field(i).Name))
			}
			return
		}
		if v.IsZero() {
			t.Errorf("%T: %s is not set from its source", out, path)
		}
	}
	walk(reflect.ValueOf(out), "")
}

// checkEveryFieldCarried fails for each top-level field of in whose value conv drops: zeroing it
// leaves conv's result as it was.
func checkEveryFieldCarried[In, Out any](t *testing.T, in In, conv func(In) Out) {
	t.Helper()
	want := conv(in)
	typ := reflect.TypeFor[In]()
	for i := range typ.NumField() {
		x := in
		f := reflect.ValueOf(&x).Elem().Field(i)
		f.SetZero()
		if reflect.DeepEqual(conv(x), want) {
			t.Errorf("%s.%s is not carried: the result does not depend on it", typ, typ.Field(i).Name)
		}
	}
}

// checkSameNamedFields fails for each top-level field that in and out both have, of one type,
// with different values.
func checkSameNamedFields(t *testing.T, in, out any) {
	t.Helper()
	iv, ov := reflect.ValueOf(in), reflect.ValueOf(out)
	for i := range iv.NumField() {
		name := iv.Type().Field(i).Name
		of, ok := ov.Type().FieldByName(name)
		if !ok || of.Type != iv.Field(i).Type() {
			continue
		}
		if a, b := iv.Field(i).Interface(), ov.FieldByIndex(of.Index).Interface(); !reflect.DeepEqual(a, b) {
			t.Errorf("%T.%s = %v, from %T.%s = %v", out, name, b, in, name, a)
		}
	}
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
