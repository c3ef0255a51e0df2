from django import forms
from django.conf import settings

from .models import Entry


class EntryForm(forms.ModelForm):
    class Meta:
        model = Entry
        fields = ["name", "message", "attachment"]
        widgets = {"message": forms.Textarea(attrs={"rows": 4})}

    def clean_attachment(self):
        f = self.cleaned_data.get("attachment")
        if f and f.size > settings.GUESTBOOK_MAX_ATTACHMENT:
            raise forms.ValidationError(f"Attachments are limited to {settings.GUESTBOOK_MAX_ATTACHMENT // 2**20} MB.")
        return f
