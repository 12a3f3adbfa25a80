package client

// WaitStart is waitStart, for the tests of package client_test.
var WaitStart = (*Client).waitStart
