package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "eddy: not yet assembled")
	os.Exit(2)
}
