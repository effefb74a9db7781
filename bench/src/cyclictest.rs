//! (being written) cyclictest from rt-tests as the timer-lateness reference.
