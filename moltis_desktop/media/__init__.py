"""Media: attachments as messages carry them (images, text files, voice notes) turned into
what a turn can use; the channels' media pipeline builds on it."""
