"""mod_esmtp benchmark (bench/run): servers, loads, measurements, report."""
