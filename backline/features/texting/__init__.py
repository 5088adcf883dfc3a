"""Staff texting: members send SMS from practice numbers by the rules calls follow
(:mod:`backline.core.texting`), through the inbox API, journaled, retried, sent once."""
