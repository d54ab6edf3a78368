// A fixture for tests/check_layering.sh: the sans-I/O session including the link above
// it (and the engine) must be rejected.
#pragma once

#include "engine/loop.h"
#include "mux/link/connection.h"
