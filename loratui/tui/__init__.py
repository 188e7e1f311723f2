"""The Textual wizard. Never imports torch: it talks to trainers only through run directories."""
