// Kept for the readers that only need the limits: they live in the one
// table of defaults.
#pragma once

#include "engine/defaults.hpp"
